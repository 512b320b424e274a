"""Small building blocks shared by encoders and decoders."""
