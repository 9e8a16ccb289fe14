"""``python -m monai_isl``: see :mod:`monai_isl.cli`."""

from .cli import main

if __name__ == "__main__":
    main()
