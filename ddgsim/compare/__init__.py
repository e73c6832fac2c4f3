"""Step 5 — compare: predictions against measured runs.

``validate`` plans, predicts, runs and measures a grid of splits and reports the error;
``figures`` draws predicted and measured timelines and the validation scatter.
"""
