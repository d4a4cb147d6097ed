"""kto_trainer: the course's cats/dogs/other VGG16 transfer-learning trainer on Keras 3, S3 and MLflow."""
