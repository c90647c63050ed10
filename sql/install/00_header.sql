-- calabi_push 0.1.0: install script
\echo Use "CREATE EXTENSION calabi_push" to load this file. \quit
