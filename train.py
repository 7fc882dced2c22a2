"""Run one unlearning experiment, or a sweep with -m. See README.md, or: python train.py --help"""

from mu_lightning.cli import main

if __name__ == "__main__":
    main()
