from fivenines.cli import main

main()
