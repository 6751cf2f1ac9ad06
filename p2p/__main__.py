"""``python -m p2p`` (what torchrun launches) runs the CLI."""

from p2p.cli.app import main

if __name__ == "__main__":
    main()
