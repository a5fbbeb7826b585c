"""The annotation store: ORM models, repository functions, runs, masks, files,
import/export, migrations and the store CLI. No Gradio here."""
