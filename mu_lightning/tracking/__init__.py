"""Where numbers go and how they are shown: logger factories, run names, console output, end-of-run logger
extras and the sweep report."""
