"""`dmds bench`: load generators and baselines, measured side by side on this machine."""
