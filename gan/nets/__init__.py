"""Network architectures: generators and discriminators, no training logic."""
