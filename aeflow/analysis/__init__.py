"""Tools that measure the runtime (verify, evaluate, its report, bench); matplotlib and torch loaded lazily."""
