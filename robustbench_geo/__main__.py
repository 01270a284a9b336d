from robustbench_geo.cli import main

main()
