"""Video anomaly detection from snippet features under weak (video-level) supervision: UCF-Crime/XD-Violence
feature releases in the RTFM/UR-DMU layout (:mod:`.features`) and the seeded SynthVAD generator
(:mod:`.synthvad`), which share one structure of videos, classes and frame labels."""
