"""MongoDB access for rawvault: the models and the small interface every task uses."""
