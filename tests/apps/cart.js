// The code of the Node app (its frames point here).
function total(order) {
  return order.sku.price * 2;
}

module.exports = { total };
