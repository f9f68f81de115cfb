// upcoming
