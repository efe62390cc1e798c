"""Reading finished runs and turning them into comparisons: tables, statistics and the HTML report."""
