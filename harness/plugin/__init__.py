"""The Locust edge: the run context, event listeners, the users, the raw writer, the web
UI tab and the capacity shape. Importing locust patches the process with gevent."""
