from tkre.cli import run_app

run_app()
