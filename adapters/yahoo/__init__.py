"""Yahoo Finance daily bars through yfinance (the chapter's ``YahooFinanceLoader``), e.g. for equities like SPY."""
