"""Training the 3D U-Net: config, patch sampling, targets, augmentation, trainer."""
