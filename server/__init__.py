"""pgcast: every row written to PostgreSQL's `messages` table reaches every connected socket."""
