from taskpoint.cli import main

if __name__ == "__main__":  # not when a spawned attempt re-imports the main module
    main()
