"""The method: SimSiam/BYOL losses and GSG selection, pairing, heads, EMA, backbones and the learner."""
