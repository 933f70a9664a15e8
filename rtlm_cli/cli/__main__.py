from rtlm_cli.cli import main

main()
