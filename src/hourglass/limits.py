"""Ceilings on sizes that users give, shared by the config checks and the command line (no heavy imports)."""

#: The widest beam: the search keeps B*K rows, so beam 100,000 on 20 sentences took gigabytes and ran for minutes
#: before anything came out; studies of wide beams stop near 1,000 (Stahlberg & Byrne 2019 search exactly).
MAX_BEAM = 1024
