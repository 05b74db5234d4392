"""Datasets on disk: MVTec 3D-AD layout (:mod:`.mvtec`), Eyecandies conversion (:mod:`.eyecandies`) and
the synthetic inspection cell (:mod:`.synthetic`, rendered by :mod:`.synthetic_render`)."""
