"""Knowledge distillation for IMDb sentiment: the library the stage scripts in stages/ share."""
