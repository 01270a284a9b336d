from robustbench_geo.cli import main

main(prog_name="rbgeo")
