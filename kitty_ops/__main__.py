from kitty_ops.cli import main

main()
