"""NeRF experts (Switch-NeRF, Switch-NeRF++): a large scene split among expert MLPs by a learned gate over 3-D
points. So far only the data side exists: camera readers for the nerfstudio / Blender ``transforms.json`` format with
ray generation (:mod:`.cameras`), the seeded ProceduralCity scene rendered by exact ray casting (:mod:`.city`) and a
pure-PyTorch multiresolution hash-grid encoding (:mod:`.hashgrid`); not registered as a task yet.
"""
