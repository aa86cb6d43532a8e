"""Looking inside the vectors: cosine similarities, PCA of the contrast activations and
per-token projections (``caa-bake analyze``), each writing a results folder with figures.

The public face of ``caa_bake.analysis``: the CLI imports these names from
``caa_bake.analysis``; its modules are internal to it. Names load on first use (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from caa_bake.core import lazy_exports

if TYPE_CHECKING:
    from caa_bake.analysis.figures import (
        plot_heatmaps,
        plot_model_cosines,
        plot_pca,
        plot_projection,
    )
    from caa_bake.analysis.pca import (
        Pca2,
        PcaJob,
        letter_cosine,
        pca2,
        run_pca_job,
        separation,
        vector_agreement,
    )
    from caa_bake.analysis.project import (
        ProjectJob,
        projection_html,
        run_project_job,
        token_projections,
    )
    from caa_bake.analysis.run import (
        AnalysisRun,
        check_layers_in,
        load_vector,
        provenance,
        resolve_behaviors,
        run_target,
        vector_record,
        write_csv_rows,
        write_json,
        writing_run,
    )
    from caa_bake.analysis.similarity import (
        SimilarityJob,
        cosine_matrix,
        run_similarity_job,
    )

__all__ = [
    "AnalysisRun",
    "Pca2",
    "PcaJob",
    "ProjectJob",
    "SimilarityJob",
    "check_layers_in",
    "cosine_matrix",
    "letter_cosine",
    "load_vector",
    "pca2",
    "plot_heatmaps",
    "plot_model_cosines",
    "plot_pca",
    "plot_projection",
    "projection_html",
    "provenance",
    "resolve_behaviors",
    "run_pca_job",
    "run_project_job",
    "run_similarity_job",
    "run_target",
    "separation",
    "token_projections",
    "vector_agreement",
    "vector_record",
    "write_csv_rows",
    "write_json",
    "writing_run",
]

_SOURCES = {
    "AnalysisRun": "run",
    "Pca2": "pca",
    "PcaJob": "pca",
    "ProjectJob": "project",
    "SimilarityJob": "similarity",
    "check_layers_in": "run",
    "cosine_matrix": "similarity",
    "letter_cosine": "pca",
    "load_vector": "run",
    "pca2": "pca",
    "plot_heatmaps": "figures",
    "plot_model_cosines": "figures",
    "plot_pca": "figures",
    "plot_projection": "figures",
    "projection_html": "project",
    "provenance": "run",
    "resolve_behaviors": "run",
    "run_pca_job": "pca",
    "run_project_job": "project",
    "run_similarity_job": "similarity",
    "run_target": "run",
    "separation": "pca",
    "token_projections": "project",
    "vector_agreement": "pca",
    "vector_record": "run",
    "write_csv_rows": "run",
    "write_json": "run",
    "writing_run": "run",
}

__getattr__, __dir__ = lazy_exports(__name__, _SOURCES, globals(), __all__)
