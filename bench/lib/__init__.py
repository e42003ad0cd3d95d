"""The library every bench scenario is built on: receivers, servers, meters, writers,
the database, the runner, typed results and their rendering."""
