from shipml.cli import main

main()
