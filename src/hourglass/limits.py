"""Ceilings on sizes that users give, shared by the config checks and the command line (no heavy imports)."""

#: The widest beam: the search keeps B*K rows, so beam 100,000 on 20 sentences took gigabytes and ran for minutes
#: before anything came out; studies of wide beams stop near 1,000 (Stahlberg & Byrne 2019 search exactly).
MAX_BEAM = 1024

#: The largest GNMT alpha, either sign: papers use 0.6 to 2, and ((5 + |Y|) / 6) ** alpha overflows a float near
#: alpha 140 for a 1,024-token output (alpha 1,000 crashed the search at its first finished hypothesis).
MAX_LENGTH_PENALTY = 10.0

#: Seeds run from 0 to 2**32 - 1: numpy's and Lightning's seed_everything's range (torch's generators take less
#: than 2**64); a larger one was an overflow deep inside torch.
MAX_SEED = 2**32 - 1
