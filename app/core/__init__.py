"""What every layer uses: settings, database, clock, ids, errors, encryption, queue, limits."""
