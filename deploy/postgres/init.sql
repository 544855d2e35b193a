-- Run once by the PostgreSQL image; the vector extension itself is created by vigil's
-- first Alembic migration, this only makes sure the database exists with UTF-8.
SELECT 'vigil database ready';
