"""Lightning callbacks that turn a run's predictions into pictures and files."""
