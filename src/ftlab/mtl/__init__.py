"""Multi-task studies (kind: mtl): gradient surgery, early stopping, evolution and comparison."""
