"""SOI-mini: procedural multi-sensor scenes, written in the real SARDet / DOTA / DroneVehicle
formats.

* :mod:`.scene` scene graphs (land cover, objects, captions); :mod:`.shapes` object geometry;
* :mod:`.sar`, :mod:`.ir`, :mod:`.rgb` sensor models; :mod:`.textures` procedural textures;
* :mod:`.writers` the real on-disk formats; :mod:`.generate` the whole dataset
  (:func:`~babelrs_core.data.synth.generate.generate_soi_mini`).
"""
