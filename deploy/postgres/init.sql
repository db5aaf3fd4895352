-- The API's prediction log lives beside MLflow's database (POSTGRES_DB=mlflow).
CREATE DATABASE predictions OWNER emotitrack;
