"""release_manager: the application whose schema the Alembic chain in ../alembic manages."""
