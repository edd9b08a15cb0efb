from tkre.cli.app import run_app

run_app()
