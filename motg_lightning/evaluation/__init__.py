"""What a run reports: held-out accuracy, mean@k and pass@k (:mod:`.held_out`), the training
step's statistics (:mod:`.training_metrics`) and the exploration measures (:mod:`.exploration`)."""
