"""Object detection over a mix of datasets for DAMEX (dataset-aware mixture-of-experts detectors, Jain et al.,
NeurIPS 2023): one sample structure (:mod:`.structures`), readers of the COCO JSON and Pascal VOC XML formats with
the packaged real sets (:mod:`.coco`, :mod:`.voc`), the seeded six-domain Mini-UODB generator (:mod:`.miniuodb`),
the spec of a dataset mix with its unified label space and dataset-to-expert map (:mod:`.mix`), and COCO AP per
dataset with the routing diagnostics (:mod:`.metrics`). Not registered as a task yet: the models, training and
boards come next.
"""
