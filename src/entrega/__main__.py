from entrega.cli.main import main

main()
