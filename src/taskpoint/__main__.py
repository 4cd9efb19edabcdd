from taskpoint.cli import main

main()
