"""`ckptkit search`: study.py runs a hyperparameter study over finetune runs (SearchSettings,
search), space.py parses what it varies (parse_space), report.py reads a study's results
(report, trial rows, trials.csv, plots), storage.py opens a study dir's files and Optuna
storage. Importing the package loads neither TensorFlow nor Optuna."""
