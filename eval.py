"""Evaluate a model unlearned elsewhere, or a run again with another metric tier. See docs/checkpoints.md, or:
python eval.py --help"""

from mu_lightning.eval_cli import main

if __name__ == "__main__":
    main()
