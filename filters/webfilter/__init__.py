"""Web filter: URL categories (UT1/squidGuard lists), the customer's web policy and the block page."""
