"""Pictures drawn from a run's state with matplotlib, no Ray: image grids with captions
(``grid``) and Fig. 1's supports with their sampling probabilities (``neighbours``), which the
Train loop also writes to TensorBoard at each checkpoint."""
