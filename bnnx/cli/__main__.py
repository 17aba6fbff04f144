from bnnx.cli import main

main()
