"""The models (JMCL encoders, phoneme-CTC conformer, ParallelKWS), G2P, configs and checkpoints."""
