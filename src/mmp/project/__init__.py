"""Starting and inspecting a project: ``mmp init`` (scaffold and data configs), ``mmp get-recipe``,
``mmp list`` (the catalog), ``mmp validate`` and ``mmp plots`` (DVC plots that render offline)."""
