"""Fine-tuning: settings, data splits, the loop, checkpoints, distributed layout and run reports."""
